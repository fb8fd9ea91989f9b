#!/bin/bash
# Mutants of the statistics, the configs and the trainer that the test suite must kill (issue 36). Each line
# changes one thing, runs the tests that should notice, and puts the file back. Run from the repository root:
#   bash scripts/mutants.sh     (a few minutes; every line should end in "failed")
source .venv/bin/activate
run() {
  name="$1"; file="$2"; old="$3"; new="$4"; shift 4
  cp "$file" /tmp/mut_backup
  python3 - "$file" "$old" "$new" <<'PY'
import sys; p,o,n=sys.argv[1:4]; s=open(p).read(); assert o in s, ("MISSING", o); open(p,"w").write(s.replace(o,n,1))
PY
  out=$(HF_HUB_OFFLINE=1 timeout 900 python -m pytest -p no:cacheprovider -W ignore -q "$@" 2>&1 | tail -1)
  cp /tmp/mut_backup "$file"
  echo "$name: $out"
}
run "interval at 50% whatever confidence" finexl/stats.py "tail = (1 - confidence) / 2" "tail = 0.25" tests/test_stats.py tests/explanation/test_scoring.py
run "null without its random swaps" finexl/stats.py "return rng.random((n_null, n)) < 0.5" "return np.zeros((n_null, n), dtype=bool)" tests/test_stats.py tests/explanation/test_scoring.py
run "both null thresholds at 0" finexl/stats.py "return np.quantile(np.asarray(null_scores), quantile, axis=axis)" "return 0 * np.quantile(np.asarray(null_scores), quantile, axis=axis)" tests/test_stats.py tests/explanation/test_scoring.py
run "bootstrap without replacement" finexl/stats.py "return rng.integers(0, n, n) if n else np.zeros(0, dtype=int)" "return rng.permutation(n)" tests/test_stats.py tests/explanation/test_scoring.py
run "unfitted estimator not checked" finexl/explanation/decompose.py "        check_is_fitted(self)
        return row_scores(self.coef_, rows, spread)" "        return row_scores(self.coef_, rows, spread)" tests/test_stats.py
run "strict round trip drops unknown keys" finexl/config.py "        if unknown and strict:" "        if unknown and strict and False:" tests/test_config.py -k "round_trip or nested"
run "search's moves with the sign flipped" finexl/stats.py "    return tuned @ unit - base @ unit" "    return base @ unit - tuned @ unit" tests/test_stats.py tests/collection/test_collection.py -k "move_along or paired"
run "gradient accumulation without dividing by the steps" finexl/train/trainer.py "self.scaler.scale(loss / k).backward()" "self.scaler.scale(loss).backward()" tests/train/test_trainer.py -k accumulation

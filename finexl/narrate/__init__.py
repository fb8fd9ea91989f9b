"""Say an explanation in words: templated sentences (the default), an LLM narrator checked for faithfulness, and
VLM concept proposals."""

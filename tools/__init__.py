"""The `delf` command line: thin wrappers that parse words and call one library function each."""

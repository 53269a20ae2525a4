"""The `meshca` command line."""

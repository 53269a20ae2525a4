"""Pure logic: no I/O, only the standard library and `cryptography`."""

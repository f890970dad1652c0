"""Rules of who may do what, as pure functions: no I/O, no clock, no logging."""

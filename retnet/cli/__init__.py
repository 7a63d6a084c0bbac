"""The ``retnet`` command line: argv is parsed only in this package."""

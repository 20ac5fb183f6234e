"""Benchmarks of mailflow at national scale (not part of the test suite): `make bench` / `python -m benchmarks`.

- generate.py: a realistic programme written straight into the database (bulk inserts / COPY);
- sink.py: an aiosmtpd sink run in another process;
- figures.py: each measurement (mailflow against the raw I/O ceiling, same run);
- __main__.py: the command line; prints one line per figure and ends with `ratio NAME=VALUE` lines.
"""

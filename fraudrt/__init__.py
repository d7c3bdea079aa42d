"""fraudrt: a real-time fraud decision platform on S3, Kinesis and Postgres."""

__version__ = "0.1.0"

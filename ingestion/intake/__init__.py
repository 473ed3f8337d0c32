"""The intake HTTP API: events, webhooks and uploaded exports → the broker (`churnops intake`).

The API checks only that what arrives can be a record of its source at all (an object per row,
the primary key present, known columns, JSON types a column can hold) and answers 202 once the
broker has acknowledged every record. The contract's value rules (types, formats, enums, ranges)
are the stream consumer's, which quarantines rather than drops; it is the lake's one streaming
writer.
"""

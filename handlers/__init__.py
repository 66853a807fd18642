"""The Todo API on Aurora DSQL: two Lambda functions behind Function URLs.

A request travels through these modules in order:

- :mod:`handlers.insert`, :mod:`handlers.select`: the Lambda entry points;
- :mod:`handlers.http`: Function URL event (payload 2.0) to request, response
  and JSON errors back;
- :mod:`handlers.api`: routes, and the mapping of failures to status codes;
- :mod:`handlers.todos`: validation and the Todo model;
- :mod:`handlers.store`: the SQL, one business span per operation;
- :mod:`handlers.database`: connection, lifetime, reconnect, OCC retries;
- :mod:`handlers.token`: the IAM auth token used as the password;
- :mod:`handlers.schema`: the DSQL-compatible schema (``dsqltrace migrate``).
"""

__all__ = []

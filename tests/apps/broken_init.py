"""A handler module whose init fails (Lambda answers 502 and logs the init error)."""

raise RuntimeError("init failed on purpose")


def handler(event, context):  # pragma: no cover - never reached
    return {"statusCode": 200}

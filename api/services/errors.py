"""What services raise; the app turns each into an HTTP status. Services never import FastAPI."""


class NotFound(LookupError):
    """404: no such job or policy."""


class Conflict(RuntimeError):
    """409: the job has already ended."""


class Unavailable(RuntimeError):
    """503: the Ray cluster cannot be reached."""


class InsufficientStorage(RuntimeError):
    """507: the service's storage is (nearly) full; it recovers when space returns."""

class DataError(RuntimeError):
    """A sample or a data file that cannot be used; the message names the file, row and fix."""

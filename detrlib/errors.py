"""The mistakes detrlib explains to its user. Every message meant for a reader is a
:class:`DetrlibError`, which the command line prints as one line; anything else is a bug, reported
with a pointer to its ``--debug`` traceback. Each kind keeps the built-in base a caller may catch."""


class DetrlibError(Exception):
    """A message for the user: it names the file, field or setting and says what to do."""


class ConfigError(DetrlibError, ValueError):
    """A config key or value that cannot be used."""


class DataError(DetrlibError, ValueError):
    """Bad input in a VOC-format tree."""


class CheckpointError(DetrlibError, ValueError):
    """A file that cannot be read as a checkpoint."""


class DownloadError(DetrlibError, RuntimeError):
    """Every mirror of an archive failed, or the file could not be written."""


class RunFolderError(DetrlibError, RuntimeError):
    """Training into this folder would write over a run, or another process trains there."""


class ProcessGroupError(DetrlibError, RuntimeError):
    """Another process of a distributed run ended, or stopped answering, before this one."""


class DivergedError(DetrlibError, FloatingPointError):
    """Non-finite losses or weights that training cannot go on from."""


class StorageError(DetrlibError, OSError):
    """A file detrlib must write cannot be written (disk full, no permission)."""


class MissingFileError(DetrlibError, FileNotFoundError):
    """A file the user named, or one a command needs, does not exist."""


class ExistingFileError(DetrlibError, FileExistsError):
    """A user's file stands where a command would write: it is never written over."""

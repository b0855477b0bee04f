"""One examination: the runner, one checkup's apply-measure-restore, the journal, the verdict."""

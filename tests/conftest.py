"""Session-wide: one persistent XLA compilation cache for every test module, the CLI runs the
tests start in-process, their subprocesses and the notebook's kernel (tests/_synthetic.py)."""
import _synthetic  # noqa: F401  (imported for its side effect: the cache and its variables)

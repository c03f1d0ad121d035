"""One line that says what went wrong, for the tools' `error: ...` messages (shared by every layer)."""

import re

# Lines TensorFlow puts around the cause of a graph error.
_PREAMBLE = ("Graph execution error:", "Detected at node", "<stack traces unavailable>", "File ", "[[")
_ASSERTION = "assertion failed: ["


def error_line(error):
    """The informative line of an exception; for a TF op error, its cause or assertion without TF's framing.

    A graph error's message starts with "Graph execution error:" and node
    names, and an assertion's text is wrapped in "assertion failed: [...]";
    an eager op error starts with "{{function_node ...}}" and ends with
    "[Op:...]".

    Args:
        error: An exception (`tf.errors.OpError` or any other).

    Returns:
        One line of text.
    """
    text = getattr(error, "message", None) or str(error)
    for line in text.splitlines():
        line = line.split("\t")[0].strip()
        line = re.sub(r"^\{\{[^}]*\}\}\s*", "", line)
        line = re.sub(r"\s*\[Op:[^\]]*\]$", "", line)
        if not line or line.startswith(_PREAMBLE):
            continue
        if line.startswith(_ASSERTION) and line.endswith("]"):
            return line[len(_ASSERTION) : -1]
        return line
    return type(error).__name__

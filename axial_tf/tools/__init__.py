"""Command-line tools, one module per job; each is installed as an `axial-tf-<name>` command.

`python -m axial_tf.tools.<name>` and the checkout's `python tools/<name>.py` run the same code.
"""

import sys

from axial_tf.utils.optional_imports import tensorflow_installed, tensorflow_needed

if not tensorflow_installed():  # programs, not a library: the line and exit status 1
    raise SystemExit(str(tensorflow_needed("The axial_tf tools")))

from absl import app, flags

# absl's help flags print the usage and exit with status 1; a help request that succeeded exits 0.
_HELP_FLAGS = frozenset({"-?", "-help", "--help", "--helpshort", "--helpfull", "--helpxml"})


def run_absl_tool(module_name, main):
    """Runs a tool's absl `main` as the program, whichever script started it.

    absl's `--help` prints the docstring and flags of the `__main__` module; under a console
    script or the checkout's tools/ shim that is not the tool's module, so the help adopts them.
    A help request exits 0.

    Args:
        module_name: The tool module's `__name__`.
        main: Its `main(argv)`.
    """
    module = sys.modules[module_name]
    entry = sys.modules["__main__"]
    if entry is not module:
        entry.__doc__ = module.__doc__
        for flag in flags.FLAGS.get_key_flags_for_module(module_name):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    try:
        app.run(main)
    except SystemExit as exit_request:
        if exit_request.code == 1 and _HELP_FLAGS.intersection(sys.argv[1:]):
            sys.exit(0)
        raise

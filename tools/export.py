"""`python tools/export.py ...` runs `axial-tf-export` (axial_tf/tools/export.py documents its flags)."""

from axial_tf.tools.export import console_main

if __name__ == "__main__":
    console_main()

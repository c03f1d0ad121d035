"""`python tools/convert_checkpoint.py ...` runs `axial-tf-convert-checkpoint` (axial_tf/tools/convert_checkpoint.py documents its flags)."""

from axial_tf.tools.convert_checkpoint import console_main

if __name__ == "__main__":
    console_main()

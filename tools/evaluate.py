"""`python tools/evaluate.py ...` runs `axial-tf-evaluate` (axial_tf/tools/evaluate.py documents its flags)."""

from axial_tf.tools.evaluate import console_main

if __name__ == "__main__":
    console_main()

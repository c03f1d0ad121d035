"""`python tools/train.py ...` runs `axial-tf-train` (axial_tf/tools/train.py documents its flags)."""

from axial_tf.tools.train import console_main

if __name__ == "__main__":
    console_main()

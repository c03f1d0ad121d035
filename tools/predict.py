"""`python tools/predict.py ...` runs `axial-tf-predict` (axial_tf/tools/predict.py documents its flags)."""

from axial_tf.tools.predict import console_main

if __name__ == "__main__":
    console_main()

"""`python tools/model_summary.py ...` runs `axial-tf-model-summary` (axial_tf/tools/model_summary.py documents its flags)."""

from axial_tf.tools.model_summary import console_main

if __name__ == "__main__":
    console_main()

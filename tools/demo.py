"""`python tools/demo.py ...` runs `axial-tf-demo` (axial_tf/tools/demo.py documents its flags)."""

from axial_tf.tools.demo import console_main

if __name__ == "__main__":
    console_main()

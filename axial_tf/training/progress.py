"""A console progress line: step, loss, images/s and ETA."""

import sys
import time


class ProgressBar:
    """Prints `step/total loss=... 12.3 img/s ETA 0:04:10`.

    On a terminal the line is rewritten in place; otherwise (logs, CI) a line is
    printed every `every` steps.

    Args:
        total: final step.
        start: first step of this run (resumed runs start later).
        log: print function.
        batch_size: global batch size, for images/s.
        every: steps between lines when not on a terminal.
    """

    def __init__(self, total, start=0, log=print, batch_size=None, every=None):
        self.total, self.start, self.log = total, start, log
        self.batch_size = batch_size
        self.every = every or max(1, (total - start) // 20)
        self.started = time.time()
        self.interactive = log is print and sys.stdout.isatty()

    def update(self, step, losses):
        done = step - self.start
        if done <= 0 or (not self.interactive and step % self.every and step != self.total):
            return
        elapsed = time.time() - self.started
        per_step = elapsed / done
        eta = int(per_step * (self.total - step))
        rate = f" {self.batch_size / per_step:.1f} img/s" if self.batch_size else f" {1 / per_step:.2f} step/s"
        loss = losses.get("total_loss")
        text = (f"step {step}/{self.total}" + (f" loss={loss:.4f}" if loss is not None else "") + rate
                + f" ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}")
        if self.interactive:
            sys.stdout.write("\r" + text.ljust(79))
            sys.stdout.flush()
        else:
            self.log(text)

    def close(self):
        if self.interactive:
            sys.stdout.write("\n")

"""The experiment: config schema, builders, tasks and the checkpoint layout.

Everything below training, evaluation and export that turns an experiment config into objects.
"""

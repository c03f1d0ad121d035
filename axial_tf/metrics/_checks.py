"""Argument checks shared by the metrics (clear errors naming the argument)."""


def check_int(name, value, minimum=None):
    """Raises ValueError unless `value` is an int (not bool) >= `minimum`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return value


def check_class_ids(name, class_ids, num_classes):
    """Returns the ids as a sorted tuple; each must be an int in [0, num_classes)."""
    if isinstance(class_ids, (str, bytes)) or not hasattr(class_ids, "__iter__"):
        raise ValueError(f"{name} must be a sequence of ints, got {class_ids!r}.")
    class_ids = tuple(class_ids)
    for class_id in class_ids:
        check_int(f"{name} entry", class_id, minimum=0)
        if class_id >= num_classes:
            raise ValueError(f"{name} entry {class_id} is not below num_classes={num_classes}.")
    if len(set(class_ids)) != len(class_ids):
        raise ValueError(f"{name} has duplicates: {class_ids!r}.")
    return tuple(sorted(class_ids))


def check_choice(name, value, choices):
    """Raises ValueError unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
    return value

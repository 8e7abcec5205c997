"""The model text of a LightGBM Booster, checked before LightGBM parses it.

LightGBM's C++ code parses the text and predicts without bounds checks: a child
index out of range reads out of bounds, a cycle among nodes never ends, and a parse
error inside its threaded parser (used when the text lists ``tree_sizes``) aborts
the process. :func:`checked_lightgbm_model` checks every tree and drops the
``tree_sizes`` line, so LightGBM parses the trees one after another and raises on
an error.
"""

import itertools


def checked_lightgbm_model(text):
    """``text`` without its tree_sizes line, once every tree in it is well formed."""
    head, _, rest = text.partition("\nTree=")
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    if not {"max_feature_idx", "num_tree_per_iteration"} <= set(header):
        raise ValueError("the header lacks max_feature_idx or num_tree_per_iteration")
    n_features = int(header["max_feature_idx"]) + 1
    if n_features < 1 or int(header["num_tree_per_iteration"]) < 1:
        raise ValueError("the header counts no features or no trees per iteration")
    trees = ("Tree=" + rest).partition("\nend of trees")[0].split("\nTree=") if rest else []
    for number, block in enumerate(trees):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        _check_lightgbm_tree(fields, n_features, number)
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith("tree_sizes="))


def _check_lightgbm_tree(fields, n_features, number):
    def values(key, count, kind=int):
        if key not in fields:
            raise ValueError(f"tree {number} lacks {key}")
        items = fields[key].split() if count else []
        if len(items) != count:
            raise ValueError(f"tree {number}: {key} has {len(items)} values, not {count}")
        return [kind(v) for v in items]

    (leaves,), n_cat = values("num_leaves", 1), int(fields.get("num_cat", 0))
    if leaves < 1 or n_cat < 0 or fields.get("is_linear", "0") != "0":
        raise ValueError(f"tree {number}: num_leaves {leaves}, num_cat {n_cat} or a linear tree")
    values("leaf_value", leaves, float)
    if leaves == 1:
        return
    splits = leaves - 1
    if not all(0 <= f < n_features for f in values("split_feature", splits)):
        raise ValueError(f"tree {number}: a split on a feature out of range")
    values("threshold", splits, float)
    decisions = values("decision_type", splits)
    children = values("left_child", splits) + values("right_child", splits)
    # a tree: from the root, every other node and every leaf is reached exactly once
    seen, todo = set(), [0]
    while todo:
        node = todo.pop()
        for child in (children[node], children[node + splits]):
            key = child if child >= 0 else splits + ~child
            if not (0 < child < splits or 0 <= ~child < leaves) or key in seen:
                raise ValueError(f"tree {number}: child {child} out of range or reached twice")
            seen.add(key)
            if child > 0:
                todo.append(child)
    if len(seen) != splits - 1 + leaves:
        raise ValueError(f"tree {number}: some nodes are not reached from the root")
    if n_cat or any(d & 1 for d in decisions):
        bounds = values("cat_boundaries", n_cat + 1)
        if bounds[0] != 0 or any(a > b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"tree {number}: cat_boundaries out of order")
        values("cat_threshold", bounds[-1])
        thresholds = fields["threshold"].split()
        for d, t in zip(decisions, thresholds):
            if d & 1 and not 0 <= int(float(t)) < n_cat:
                raise ValueError(f"tree {number}: a categorical split out of range")


"""DeepSeek from scratch: one module per episode (``ep05_self_attention`` …) and ``config``.

Modules import each other relatively (``from .ep16_rope import apply_rope``), so the
same files work as ``solutions``, ``exercises``, a submission folder or a notebook course.
"""

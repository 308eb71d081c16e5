"""Tools an environment offers the model: typed functions with docstrings, run so that no tool stops the run.

Built-ins: `calculator` (arithmetic through Python's syntax tree, no eval) and `python` (a program in a separate,
limited process). A tool plugin is any typed function with a Google-style docstring, named by 'module:attr' or
'file.py:attr', or registered through the `rlkit.tools` entry point group. See docs/environments.md.
"""

from rlkit.tools.toolbox import Tool, ToolBox, load_toolbox, schema_of

__all__ = ["Tool", "ToolBox", "load_toolbox", "schema_of"]

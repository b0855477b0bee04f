"""Built-in modification kinds, one module each, every one declaring `METHOD = ModificationMethod(...)`.

These modules stay light (no torch): the implementation of each kind is named as 'module:function' and
imported when a checkup first applies it.
"""

"""A py_test for one tests/<name>.py file, with the shared helpers."""

def mnemosyne_py_test(name, deps = [], size = "small", **kwargs):
    native.py_test(
        name = name,
        srcs = [name + ".py"],
        main = name + ".py",
        size = size,
        python_version = "PY3",
        srcs_version = "PY3",
        deps = deps + [":testing"],
        **kwargs
    )

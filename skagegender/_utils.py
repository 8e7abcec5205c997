"""Private helpers free to every subpackage (they import nothing of skagegender)."""


def npy_header(fp):
    """Shape and dtype declared by the .npy header at the start of file object ``fp``.

    Reads the header only (numpy caps it at 10,000 bytes), never the data, and
    never unpickles. Raises ValueError (or SyntaxError, TypeError, EOFError)
    for a damaged header.

    Parameters
    ----------
    fp : binary file object positioned at the start of a .npy member

    Returns
    -------
    shape : tuple of int
    dtype : numpy.dtype
    """
    import numpy as np

    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f".npy format version {version} is not read here")
    return shape, dtype

"""Reference pages of the manual generated from the code (see :mod:`proxy.docgen.pages`)."""

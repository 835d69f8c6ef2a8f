# Type stubs for the parts of pygeoapi (0.22-0.24; it ships no type hints) that services/ uses: its API and
# request objects, the process API's functions, and the processor and job manager bases we subclass.
# Written from pygeoapi's own signatures; checked by mypy against our calls (make lint).
__version__: str

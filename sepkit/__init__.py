"""sepkit: deep clustering (DC), mask inference (MI) and Chimera networks for music separation.

Reproduces Luo, Chen, Hershey, Le Roux, Mesgarani, "Deep clustering and conventional networks
for music separation: stronger together" (ICASSP 2017).
"""
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that `import sepkit` stays cheap for the shell utilities.
    if name == "Separator":
        from sepkit.separate import Separator

        return Separator
    raise AttributeError(f"module 'sepkit' has no attribute {name!r}")

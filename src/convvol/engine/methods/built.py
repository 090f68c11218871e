"""What the kernels that build one large array share: built once, let go after a run."""

from __future__ import annotations

from typing import ClassVar


class BuiltOnce:
    """A band kernel whose one large array (a Toeplitz matrix, the spectra) is a
    ``cached_property`` named by :attr:`BUILT`: built once before the bands run on several
    threads (:meth:`ready`), and let go when a whole run is over (:meth:`release`; strips
    of a plan keep it)."""

    BUILT: ClassVar[str]
    blas: ClassVar[bool] = True  # their products (and the spectra's sums) call BLAS

    def ready(self) -> None:
        """Build the array now, once, before bands run on several threads."""
        getattr(self, self.BUILT)

    def release(self) -> None:
        """Let go of the array (it is built again if the plan runs again)."""
        self.__dict__.pop(self.BUILT, None)

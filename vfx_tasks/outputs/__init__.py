"""What an output folder holds and how it is read back: the manifest, the per-video index, exports.

It may import :mod:`vfx_tasks.errors`, :mod:`vfx_tasks.storage`, :mod:`vfx_tasks.models` and
:mod:`vfx_tasks.extract` (crop order, clip sampling; never torch); h5py only in ``export_hdf5``.
"""

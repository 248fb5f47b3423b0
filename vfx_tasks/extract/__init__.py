"""The extraction core: decode, sample clips, transform, crop, run the backbone, pool.

It knows nothing of queues, Redis or the Hub: it may import :mod:`vfx_tasks.models`,
:mod:`vfx_tasks.errors` and :mod:`vfx_tasks.settings`, never :mod:`vfx_tasks.queue` or
:mod:`vfx_tasks.sources`.
"""

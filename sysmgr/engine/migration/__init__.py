"""Copying and moving containers between members: the two endpoints (:mod:`.source`,
:mod:`.target`), the frames between them and the mover (:mod:`.wire`), and the mark a
move leaves until it is settled (:mod:`.markers`). The mover itself, which talks to both
members, is :mod:`sysmgr.api.migration`.

Layer: engine.
"""

"""The processes a run needs: worker command lines and supervision, ``--local``'s cluster, and an
embedded ``redis-server``."""

# Marks ext/shadowgrpc/sketches as the Cython package shadowgrpc.sketches (the compiled sketches:
# _c, _core_c, _divergence_c, _paired_c), mirroring shadowgrpc/sketches/.

"""warp-lang kernel for bench_raster.py's comparison: one ray per pixel against a BVH, the face hit or -1.

Kept in a module of its own: warp compiles a kernel once per module content and caches it.
"""

import warp as wp


@wp.kernel
def cast_kernel(mesh: wp.uint64, origins: wp.array(dtype=wp.vec3), dirs: wp.array(dtype=wp.vec3),
                face: wp.array(dtype=wp.int32)):
    tid = wp.tid()
    query = wp.mesh_query_ray(mesh, origins[tid], wp.normalize(dirs[tid]), 1.0e6)
    if query.result:
        face[tid] = query.face
    else:
        face[tid] = -1

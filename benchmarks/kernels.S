# Source of the micro-kernels in edgecls/bench/_kernels.py (machine code there): gcc -c kernels.S && objcopy -O binary -j .text kernels.o k.bin
.intel_syntax noprefix
.text
.globl fma512
fma512:
  vpxord zmm30, zmm30, zmm30
  vpxord zmm31, zmm31, zmm31
  vpxord zmm0, zmm0, zmm0
  vpxord zmm1, zmm1, zmm1
  vpxord zmm2, zmm2, zmm2
  vpxord zmm3, zmm3, zmm3
  vpxord zmm4, zmm4, zmm4
  vpxord zmm5, zmm5, zmm5
  vpxord zmm6, zmm6, zmm6
  vpxord zmm7, zmm7, zmm7
  vpxord zmm8, zmm8, zmm8
  vpxord zmm9, zmm9, zmm9
  vpxord zmm10, zmm10, zmm10
  vpxord zmm11, zmm11, zmm11
1:
  vfmadd231ps zmm0, zmm30, zmm31
  vfmadd231ps zmm1, zmm30, zmm31
  vfmadd231ps zmm2, zmm30, zmm31
  vfmadd231ps zmm3, zmm30, zmm31
  vfmadd231ps zmm4, zmm30, zmm31
  vfmadd231ps zmm5, zmm30, zmm31
  vfmadd231ps zmm6, zmm30, zmm31
  vfmadd231ps zmm7, zmm30, zmm31
  vfmadd231ps zmm8, zmm30, zmm31
  vfmadd231ps zmm9, zmm30, zmm31
  vfmadd231ps zmm10, zmm30, zmm31
  vfmadd231ps zmm11, zmm30, zmm31
  dec rdi
  jnz 1b
  vzeroupper
  ret
.globl vnni512
vnni512:
  vpxord zmm30, zmm30, zmm30
  vpxord zmm31, zmm31, zmm31
1:
  vpdpbusd zmm0, zmm30, zmm31
  vpdpbusd zmm1, zmm30, zmm31
  vpdpbusd zmm2, zmm30, zmm31
  vpdpbusd zmm3, zmm30, zmm31
  vpdpbusd zmm4, zmm30, zmm31
  vpdpbusd zmm5, zmm30, zmm31
  vpdpbusd zmm6, zmm30, zmm31
  vpdpbusd zmm7, zmm30, zmm31
  vpdpbusd zmm8, zmm30, zmm31
  vpdpbusd zmm9, zmm30, zmm31
  vpdpbusd zmm10, zmm30, zmm31
  vpdpbusd zmm11, zmm30, zmm31
  dec rdi
  jnz 1b
  vzeroupper
  ret
.globl fma256
fma256:
  vxorps ymm14, ymm14, ymm14
  vxorps ymm15, ymm15, ymm15
  vxorps ymm0, ymm0, ymm0
  vxorps ymm1, ymm1, ymm1
  vxorps ymm2, ymm2, ymm2
  vxorps ymm3, ymm3, ymm3
  vxorps ymm4, ymm4, ymm4
  vxorps ymm5, ymm5, ymm5
  vxorps ymm6, ymm6, ymm6
  vxorps ymm7, ymm7, ymm7
  vxorps ymm8, ymm8, ymm8
  vxorps ymm9, ymm9, ymm9
  vxorps ymm10, ymm10, ymm10
  vxorps ymm11, ymm11, ymm11
1:
  vfmadd231ps ymm0, ymm14, ymm15
  vfmadd231ps ymm1, ymm14, ymm15
  vfmadd231ps ymm2, ymm14, ymm15
  vfmadd231ps ymm3, ymm14, ymm15
  vfmadd231ps ymm4, ymm14, ymm15
  vfmadd231ps ymm5, ymm14, ymm15
  vfmadd231ps ymm6, ymm14, ymm15
  vfmadd231ps ymm7, ymm14, ymm15
  vfmadd231ps ymm8, ymm14, ymm15
  vfmadd231ps ymm9, ymm14, ymm15
  vfmadd231ps ymm10, ymm14, ymm15
  vfmadd231ps ymm11, ymm14, ymm15
  dec rdi
  jnz 1b
  vzeroupper
  ret
.globl vnni256
vnni256:
  vxorps ymm14, ymm14, ymm14
  vxorps ymm15, ymm15, ymm15
1:
  {vex} vpdpbusd ymm0, ymm14, ymm15
  {vex} vpdpbusd ymm1, ymm14, ymm15
  {vex} vpdpbusd ymm2, ymm14, ymm15
  {vex} vpdpbusd ymm3, ymm14, ymm15
  {vex} vpdpbusd ymm4, ymm14, ymm15
  {vex} vpdpbusd ymm5, ymm14, ymm15
  {vex} vpdpbusd ymm6, ymm14, ymm15
  {vex} vpdpbusd ymm7, ymm14, ymm15
  {vex} vpdpbusd ymm8, ymm14, ymm15
  {vex} vpdpbusd ymm9, ymm14, ymm15
  {vex} vpdpbusd ymm10, ymm14, ymm15
  {vex} vpdpbusd ymm11, ymm14, ymm15
  dec rdi
  jnz 1b
  vzeroupper
  ret

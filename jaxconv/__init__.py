"""jaxconv: 2-D convolution in JAX from lax slicing, with hand-derived backward rules."""

from jaxconv._src.conv_transpose_lax import conv_transpose as conv_transpose
from jaxconv._src.convolution import conv2d as conv2d
from jaxconv._src.convolution import conv2d_grad_bias as conv2d_grad_bias
from jaxconv._src.convolution import conv2d_grad_input as conv2d_grad_input
from jaxconv._src.convolution import conv2d_grad_kernel as conv2d_grad_kernel
from jaxconv._src.evaluation.plan import Plan as Plan
from jaxconv._src.evaluation.plan import choose as choose
from jaxconv._src.evaluation.plan import supported as supported
from jaxconv._src.general_dilated import conv_general_dilated as conv_general_dilated
from jaxconv._src.geometry import ConvGeometry as ConvGeometry
from jaxconv._src.geometry import conv2d_geometry as conv2d_geometry
from jaxconv._src.reference import conv2d_reference as conv2d_reference
from jaxconv._src.transpose import conv_transpose2d as conv_transpose2d
from jaxconv._src.xla_reference import conv2d_xla as conv2d_xla

__version__ = "0.1.0"

__all__ = [
    "ConvGeometry",
    "Plan",
    "choose",
    "conv2d",
    "conv2d_geometry",
    "conv2d_grad_bias",
    "conv2d_grad_input",
    "conv2d_grad_kernel",
    "conv2d_reference",
    "conv2d_xla",
    "conv_general_dilated",
    "conv_transpose",
    "conv_transpose2d",
    "supported",
]

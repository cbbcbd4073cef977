"""jaxconv: convolution in JAX from lax slicing, with hand-derived backward rules, for one, two
and three spatial axes."""

from jaxconv._src.conv_transpose_lax import conv_transpose as conv_transpose
from jaxconv._src.convolution import conv as conv
from jaxconv._src.convolution import conv1d as conv1d
from jaxconv._src.convolution import conv2d as conv2d
from jaxconv._src.convolution import conv2d_grad_bias as conv2d_grad_bias
from jaxconv._src.convolution import conv2d_grad_input as conv2d_grad_input
from jaxconv._src.convolution import conv2d_grad_kernel as conv2d_grad_kernel
from jaxconv._src.convolution import conv3d as conv3d
from jaxconv._src.convolution import conv_grad_bias as conv_grad_bias
from jaxconv._src.convolution import conv_grad_input as conv_grad_input
from jaxconv._src.convolution import conv_grad_kernel as conv_grad_kernel
from jaxconv._src.evaluation.evaluate import plans_for as plans_for
from jaxconv._src.evaluation.plan import Plan as Plan
from jaxconv._src.evaluation.plan import choose as choose
from jaxconv._src.evaluation.plan import supported as supported
from jaxconv._src.general_dilated import conv_general_dilated as conv_general_dilated
from jaxconv._src.geometry import ConvGeometry as ConvGeometry
from jaxconv._src.geometry import conv1d_geometry as conv1d_geometry
from jaxconv._src.geometry import conv2d_geometry as conv2d_geometry
from jaxconv._src.geometry import conv3d_geometry as conv3d_geometry
from jaxconv._src.reference import conv2d_reference as conv2d_reference
from jaxconv._src.reference import conv_reference as conv_reference
from jaxconv._src.transpose import conv_transpose1d as conv_transpose1d
from jaxconv._src.transpose import conv_transpose2d as conv_transpose2d
from jaxconv._src.transpose import conv_transpose3d as conv_transpose3d
from jaxconv._src.xla_reference import conv2d_xla as conv2d_xla
from jaxconv._src.xla_reference import conv_xla as conv_xla

__version__ = "0.1.0"

__all__ = [
    "ConvGeometry",
    "Plan",
    "choose",
    "conv",
    "conv1d",
    "conv1d_geometry",
    "conv2d",
    "conv2d_geometry",
    "conv2d_grad_bias",
    "conv2d_grad_input",
    "conv2d_grad_kernel",
    "conv2d_reference",
    "conv2d_xla",
    "conv3d",
    "conv3d_geometry",
    "conv_general_dilated",
    "conv_grad_bias",
    "conv_grad_input",
    "conv_grad_kernel",
    "conv_reference",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "conv_xla",
    "plans_for",
    "supported",
]

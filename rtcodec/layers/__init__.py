"""Building blocks of the FACodec models; layers never import models."""

"""Published AlexNet weights in and out: Caffe's and torchvision's (:mod:`.convert`), and the
``.caffemodel`` reader (:mod:`.caffe`)."""

"""Recording and replay in GoReplay's format: the format (:mod:`.gor`), the bytes a payload is read into
(:mod:`.blob`), the recorder behind a ``file://`` destination (:mod:`.recorder`), and ``wsgimirror replay``
(:mod:`.replay`, with worker processes in :mod:`.workers`)."""

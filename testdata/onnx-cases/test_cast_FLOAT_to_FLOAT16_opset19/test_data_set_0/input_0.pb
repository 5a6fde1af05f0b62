BxJ0 óá@jSƒ@Z¤@rTÙ¿€†A¿mÖÀ¹G$@pbR>Y&AÖ‹í¿§;j@
^@
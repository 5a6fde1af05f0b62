
ByJGD EË¾ºwÀ"A“2)Hl¿RCk@
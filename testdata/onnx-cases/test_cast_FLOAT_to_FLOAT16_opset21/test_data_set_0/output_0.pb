
ByJŠ¼EGÆLÄ;HD;Ê½–DrÈ¾Èy¹ØÈ
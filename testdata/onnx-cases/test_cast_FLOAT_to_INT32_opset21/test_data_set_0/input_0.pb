BxJ0K”ÂÍq¥BIW.Â˜v”B£[ÂÆî¿BÃ@F2‚BŠDBÚò
ÂíQ›B·í‘@
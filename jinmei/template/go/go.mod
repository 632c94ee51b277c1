module jinmei/ollamarender

go 1.19

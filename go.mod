module github.com/ddpm-go/ddpm

go 1.24
